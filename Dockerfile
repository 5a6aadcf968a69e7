# The processor image used by docker-compose.yml.
# Build stage: compile the hot modules with mypyc (processor/native.py), where a C compiler is.
FROM python:3.11 AS build
WORKDIR /app
RUN pip install --no-cache-dir mypy==2.4.1 setuptools wheel
COPY pyproject.toml setup.py README.md ./
COPY processor ./processor
RUN PROCESSOR_COMPILE=1 python setup.py --quiet build_ext --inplace

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY --from=build /app/processor ./processor
COPY schemas ./schemas
RUN pip install --no-cache-dir .
# `python -m processor` runs from /app, so the codec finds /app/schemas beside /app/processor, and
# the compiled modules beside their source
ENV PYTHONUNBUFFERED=1 WEB_HOST=0.0.0.0 DATA_DIR=/var/lib/insurance-fund
EXPOSE 6066
ENTRYPOINT ["python", "-m", "processor"]
CMD ["worker"]
