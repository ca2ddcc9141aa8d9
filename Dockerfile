# One image for the dataflow, the generator, the tools and the dashboard (gunicorn).
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY schemas schemas
COPY generators generators
COPY dataflows dataflows
COPY clickhouse clickhouse
COPY dash_app dash_app
RUN uv sync --frozen --no-dev
RUN useradd --create-home fraud && mkdir -p /data && chown fraud /data
USER fraud
CMD ["fraud", "--help"]
