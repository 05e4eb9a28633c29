# Multi-stage build. The build stage builds a wheel as `pip install .` does: the build
# makes the stubs from proto/ (setup.py's build_py runs sidecar/stubs.py, what `make
# proto` runs too) and compiles the per-request modules; tests/integration/test_dockerfile_build.py
# runs these steps in CI, where no Docker engine runs. (No `make` here: python:3.11-slim has none.)
#
# BASE: any Debian-based image with Python 3.11+ as `python` and the venv module. The
# default is pulled from a registry; where none is reachable, `make image` makes one from
# the Debian mirror (scripts/make-base-image) and passes it here.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
WORKDIR /src
# Set (by scripts/build-image) when pip must trust the build host's CA bundle, mounted for
# the build only: behind a TLS-inspecting proxy. Unset: pip's own.
ARG PIP_CERT
# A C compiler for the wheel build: it compiles the per-request modules with mypyc
# (setup.py, sidecar/native.py; without one they install as plain Python), and the Python
# headers when the base has none (Debian's python3 keeps them in python3-dev). Build
# stage only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && (test -f "$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" \
     || apt-get install -y --no-install-recommends python3-dev) \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md MANIFEST.in ./
COPY scripts/mypyc.ini ./scripts/
COPY proto ./proto
COPY sidecar ./sidecar
COPY services ./services
# pip builds in an isolated environment with the build requirements (pyproject.toml:
# mypyc, grpcio-tools, mypy-protobuf), then installs the wheel into a clean venv.
RUN pip wheel --no-cache-dir --no-deps -w /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl \
 && /opt/venv/bin/pip install --no-cache-dir --force-reinstall --no-deps \
      "opentelemetry-proto==$(/opt/venv/bin/python -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"

# Runtime: the project and its runtime dependencies only, as a non-root user. The same
# base as the build stage: the venv's interpreter is the base's.
FROM ${BASE}
RUN useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin sidecar
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER sidecar
# The inbound listener (0.0.0.0:8181 by default). The outbound listener (15001) and
# admin (9901) bind loopback by default: the app reaches them inside the shared network
# namespace (a pod), not through a published port.
EXPOSE 8181
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9901/live', timeout=1).status != 200)"]
ENTRYPOINT ["sidecar"]
CMD ["run", "-c", "/etc/sidecar/sidecar.yaml"]
