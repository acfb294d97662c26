# One image for every bus_tasks process; docker-compose.yml picks the subcommand.
FROM python:3.11.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The dependencies first, as the lock pins and hashes them (make lock): a layer that a change of
# the sources alone does not rebuild.
COPY requirements/runtime.txt ./requirements/
RUN pip install --require-hashes -r requirements/runtime.txt
# README.md* : the readme pyproject.toml names, when there is one; LICENSE: its license-files.
COPY pyproject.toml README.md* LICENSE ./
COPY bus_tasks ./bus_tasks
RUN pip install --no-deps . && pip check && rm -rf /src

# The aggregator's view lives in /var/lib/bus_tasks (BUS_TASKS_DATA_DIR); the directory is
# created here, owned by the service user, so that a named volume mounted on it is writable.
RUN groupadd --system bus_tasks \
    && useradd --system --gid bus_tasks --home-dir /var/lib/bus_tasks --shell /usr/sbin/nologin bus_tasks \
    && mkdir -p /var/lib/bus_tasks \
    && chown bus_tasks:bus_tasks /var/lib/bus_tasks

USER bus_tasks
WORKDIR /var/lib/bus_tasks

ENTRYPOINT ["bus-tasks"]
CMD ["--help"]
