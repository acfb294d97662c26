"""Make the secrets docker-compose.yml reads (run once, before ``docker compose up``):

    python deploy/compose/make_secrets.py            # into deploy/compose/secrets/

- ``rabbitmq-definitions.json``: ``bus-tasks broker-setup``'s least-privilege users and topology
  (one user per process, random passwords stored hashed), plus ``admin``, RabbitMQ's administrator
  for the management UI. RabbitMQ loads it at its first boot: no guest user is made.
- ``<identity>.toml``: each process's settings (``BUS_TASKS_CONFIG``): its broker URL with its
  password, ``identity = "broker"``, the aggregators' names.
- ``rabbitmq.env``: ``RABBITMQ_ERLANG_COOKIE``, the random cookie the three RabbitMQ nodes share
  to form one cluster (whoever holds it controls the nodes); compose reads it on this host.
- ``redis.conf``: Redis' password. ``stomp.pem``/``stomp.key``: a self-signed certificate for
  the STOMP front door's TLS (replace them with your own; see docs/operations.md).
- ``passwords``: every ``NAME PASSWORD``, for you; not given to any container.

The directory is made 0700: the files in it are readable by the containers' own users (compose
mounts them as they are), the directory keeps the host's other users out. An existing directory
is left alone unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from bus_tasks.broker_setup import HASHING, Deployment, definitions, new_passwords, password_hash

HERE = Path(__file__).resolve().parent
VHOST = "bus"
AGGREGATORS = ("aggregator-1", "aggregator-2")
SUBSYSTEMS = ("vdsm", "gluster")  # `simulate storage` publishes as vdsm, `simulate gluster` as gluster
FRONT_DOORS = ("stomp",)
ADMINS = ("ops",)  # the CLI of an operator with the dead letters and inject
BROKER_ADMIN = "admin"  # RabbitMQ's own administrator (management UI), not a bus_tasks identity
BROKER_HOSTS = ("rabbitmq:5672", "rabbitmq-2:5672", "rabbitmq-3:5672")  # one cluster: each URL names all


def make(out: Path) -> None:
    """Write every secret into ``out`` (a new directory)."""
    out.mkdir(mode=0o700, parents=True)
    deployment = Deployment(
        subsystems=SUBSYSTEMS,
        aggregators=AGGREGATORS,
        admins=ADMINS,
        front_doors=FRONT_DOORS,
        vhost=VHOST,
        queue_type="quorum",  # the RPC and dead-letter queues survive the loss of a node
    )
    passwords = new_passwords(deployment.roles())
    document = definitions(deployment, passwords)
    admin_password = secrets.token_urlsafe(24)
    document["users"].append(
        {
            "name": BROKER_ADMIN,
            "password_hash": password_hash(admin_password),
            "hashing_algorithm": HASHING,
            "tags": ["administrator"],
        }
    )
    document["permissions"].append(
        {"user": BROKER_ADMIN, "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"}
    )
    _write(out / "rabbitmq-definitions.json", json.dumps(document, indent=2) + "\n")
    for name, password in passwords.items():
        login = f"{quote(name, safe='')}:{quote(password, safe='')}"
        url = ";".join(f"amqp://{login}@{host}/{VHOST}" for host in BROKER_HOSTS)
        aggregators = ", ".join(json.dumps(a) for a in AGGREGATORS)
        _write(
            out / f"{name}.toml",
            f"# bus_tasks settings of {name} (made by deploy/compose/make_secrets.py)\n"
            f"broker_url = {json.dumps(url)}\n"
            'identity = "broker"\n'
            'queue_type = "quorum"\n'
            f"aggregators = [{aggregators}]\n",
        )
    cookie = secrets.token_hex(32)
    (out / "rabbitmq.env").write_text(f"RABBITMQ_ERLANG_COOKIE={cookie}\n")
    (out / "rabbitmq.env").chmod(0o600)  # read by compose on this host, not mounted in a container
    redis_password = secrets.token_urlsafe(24)
    _write(out / "redis.conf", f"requirepass {redis_password}\n")
    _self_signed(out / "stomp.pem", out / "stomp.key")
    lines = [f"{name} {password}" for name, password in passwords.items()]
    lines += [f"{BROKER_ADMIN} {admin_password}", f"redis {redis_password}"]
    (out / "passwords").write_text("\n".join(lines) + "\n")
    (out / "passwords").chmod(0o600)


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)  # the containers' users are not the host's: the directory guards them


def _self_signed(cert: Path, key: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("make_secrets: openssl is needed for the STOMP certificate")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,DNS:stomp,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    cert.chmod(0o644)
    key.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "secrets", help="default: %(default)s")
    parser.add_argument("--force", action="store_true", help="replace an existing directory")
    args = parser.parse_args(argv)
    if args.out.exists():
        if not args.force:
            print(f"make_secrets: {args.out} exists (--force replaces it)", file=sys.stderr)
            return 1
        shutil.rmtree(args.out)
    make(args.out)
    print(f"secrets written to {args.out}; the passwords are in {args.out / 'passwords'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
