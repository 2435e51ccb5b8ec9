# The bus's Python services (topology, producer, workers, and the simulation) in one image.
FROM python:3.11.7-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY common common
COPY broker broker
COPY events events
COPY topology topology
COPY operations operations
COPY producer producer
COPY workers workers
COPY orderbus orderbus
COPY simulation simulation
COPY demo demo
# The versions tested: constraints.txt pins every package (scripts/lock writes it).
RUN pip install --no-cache-dir -c constraints.txt '.[postgres,fast]' \
    && useradd --system --uid 10001 bus
USER bus
ENV TOPOLOGY_FILE=/app/topology/orders.yaml
CMD ["python", "-m", "topology", "plan"]
