# Multi-stage build. The build stage builds a wheel as `pip install .` does: the build
# makes the stubs from proto/ (setup.py's build_py runs sidecar/stubs.py, what `make
# proto` runs too) and compiles the per-request modules; tests/integration/test_dockerfile_build.py
# runs these steps in CI, where no Docker engine runs. (No `make` here: python:3.11-slim has none.)
FROM python:3.11-slim AS build
WORKDIR /src
# A C compiler for the wheel build: it compiles the per-request modules with mypyc
# (setup.py, sidecar/native.py; without one they install as plain Python). Build stage only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
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
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl

# Runtime: the project and its runtime dependencies only, as a non-root user.
FROM python:3.11-slim
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
