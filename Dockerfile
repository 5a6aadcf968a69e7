# The processor image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY processor ./processor
COPY schemas ./schemas
RUN pip install --no-cache-dir .
# `python -m processor` runs from /app, so the codec finds /app/schemas beside /app/processor
ENV PYTHONUNBUFFERED=1 WEB_HOST=0.0.0.0 DATA_DIR=/var/lib/insurance-fund
EXPOSE 6066
ENTRYPOINT ["python", "-m", "processor"]
CMD ["worker"]
