# Multi-stage build: the same steps as `make proto` and `pip install .`, so CI
# exercises them even where no Docker engine runs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md Makefile ./
COPY proto ./proto
COPY sidecar ./sidecar
COPY services ./services
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "grpcio-tools>=1.85,<1.86" "mypy-protobuf>=3.6,<6" \
 && PATH=/opt/venv/bin:$PATH make proto VENV=/opt/venv PROTO_STAMP=music/.generated STAMP=/opt/venv/bin/python \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/pip uninstall -y grpcio-tools mypy-protobuf

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin sidecar
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER sidecar
EXPOSE 8181 15001 9901
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9901/live', timeout=1).status != 200)"]
ENTRYPOINT ["sidecar"]
CMD ["run", "-c", "/etc/sidecar/sidecar.yaml"]
