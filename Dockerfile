# One image for everything this project runs: `trigger worker`, `trigger gateway`, the `trigger` CLI
# and the stack's one-shot `init` (worker/bootstrap.py). The compose file picks the command.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZENML_ANALYTICS_OPT_IN=false \
    # Celery: SIGTERM (docker stop) starts the cold shutdown, softened by TRIGGER_SOFT_SHUTDOWN_TIMEOUT:
    # runs still going after it are handed on to the next worker at once, not left to a lease timeout.
    REMAP_SIGTERM=SIGQUIT

# A fixed uid, so a volume written by `init` is readable by every worker replica.
# /zenml/.zenconfig/local_stores: where the workers keep the default stack's local artifact store
# (ZENML_LOCAL_STORES_PATH in docker-compose.yml);
# owned by that user here, so the volume workers share there is writable by them.
RUN groupadd --system --gid 10001 trigger \
    && useradd --system --uid 10001 --gid trigger --create-home --home-dir /home/trigger trigger \
    && install -d -o trigger -g trigger /var/lib/trigger /var/lib/trigger/credentials /app \
        /zenml /zenml/.zenconfig /zenml/.zenconfig/local_stores

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change,
# not on every edit of the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x['worker'] + x['gateway'] + x['flower']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code; --no-deps: everything it needs is in the layer above.
COPY README.md ./
COPY producers ./producers
COPY worker ./worker
COPY pipelines ./pipelines
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

USER 10001:10001

# Worker's default: the process answers and so does Redis. The gateway and init override it in compose.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.healthcheck"]

CMD ["trigger", "worker"]
