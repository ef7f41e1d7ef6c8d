# ehrsim: docker build -t ehrsim . && docker run -p 8080:8080 -p 2575:2575 ehrsim
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EHRSIM_SCENARIOS=/app/scenarios

WORKDIR /app
COPY pyproject.toml README.md ./
COPY simulator ./simulator
COPY conformance ./conformance
COPY scenarios ./scenarios
RUN pip install . && useradd --create-home --uid 10001 --shell /usr/sbin/nologin ehrsim

USER ehrsim
EXPOSE 8080 2575
# Plain HTTP by default; HTTPS with a mounted pair (README: HTTPS), e.g.
#   docker run -p 8443:8080 -v "$PWD/certs:/certs:ro" ehrsim ehrsim serve --host 0.0.0.0 \
#     --tls-cert /certs/ehrsim-cert.pem --tls-key /certs/ehrsim-key.pem
# The health check asks over HTTP, then over HTTPS (unverified: it only asks whether the server is up).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import ssl, sys, urllib.request as u\nfor s in ('http', 'https'):\n    try:\n        u.urlopen(s + '://127.0.0.1:8080/_admin/health', timeout=1, context=ssl._create_unverified_context()); sys.exit(0)\n    except Exception: pass\nsys.exit(1)"]
CMD ["ehrsim", "serve", "--host", "0.0.0.0", "--port", "8080", "--mllp-port", "2575"]
