"""HAProxy in front of the gateway replicas (Debian's ``haproxy``), on the public gateway ports.

Why HAProxy rather than nginx: open-source nginx has no active health checks, only passive
``max_fails``; HAProxy checks ``/v2/health/ready`` on every replica each second, takes a replica
out after two failures and back after one success, balances by least connections, speaks HTTP/2
to the replicas for gRPC, and exports Prometheus metrics natively (``USE_PROMEX``).

Retries: inference is replay-safe (it changes nothing; feedback is keyed by request id), so the
inference paths are retried on another replica when a connection fails, a replica closes it
without an answer or with half a one (killed mid-request), times out, or answers 503 (draining or
not ready). A request in flight on a replica that is killed can still fail when its answer was
half written (measured: at most a few per kill under load, docs/benchmarks.md). Every
other path (admin writes, feedback) is retried only when the connection itself failed, when the
request cannot have reached a replica.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, http_probe
from serving.gateway.service import gateway_layouts

#: The paths that run a model and may be replayed on another replica.
INFERENCE_PATHS = "|".join(
    (
        r"^/v2/models/[^/]+(/versions/[0-9]+)?/infer$",
        r"^/v1/models/[^/:]+(/versions/[0-9]+)?:predict$",
        r"^/predictions/",
    )
)


def haproxy_binary() -> str:
    debian = Path("/usr/sbin/haproxy")  # /usr/sbin is not on every user's PATH
    found = shutil.which("haproxy") or (debian if debian.exists() else None)
    if found is None:
        raise FileNotFoundError("haproxy is not installed; `make setup` installs Debian's haproxy")
    return str(found)


def render_haproxy_config(settings: FlywheelSettings) -> str:
    host = settings.host
    layouts = gateway_layouts(settings)
    # A refused or reset connection marks a replica down at once (observe layer4): a killed replica
    # takes no more requests, and its restarted process gets none until /v2/health/ready says 200
    # (it answers 503 while it loads its routing specs). Checks alone took two seconds (fall 2).
    # Two errors, not one: a single connect timeout on a saturated machine must not take every
    # replica out at once.
    check = "check inter 1s fall 2 rise 1 observe layer4 error-limit 2 on-error mark-down"
    http_servers = "\n".join(f"  server {gw.name} {host}:{gw.http_port} {check}" for gw in layouts)
    grpc_servers = "\n".join(
        # Checked on the replica's HTTP/1.1 port (check-proto h1), the traffic itself is h2.
        f"  server {gw.name} {host}:{gw.grpc_port} proto h2 {check} port {gw.http_port} check-proto h1"
        for gw in layouts
    )
    # Bodies up to this size are buffered, so a retried inference can be replayed.
    bufsize = 1 << 17
    return f"""# Rendered by flywheel (serving/gateway/balancer.py) for {len(layouts)} gateway replicas.
global
  maxconn 4096
  tune.bufsize {bufsize}
  log stderr format short local0 warning

defaults
  mode http
  log global
  option dontlognull
  timeout connect 2s
  timeout client 120s
  timeout server 60s
  timeout http-keep-alive 30s
  timeout check 2s
  retries 2
  option redispatch 1

frontend rest
  bind {host}:{settings.gateway_http_port}
  acl inference path_reg {INFERENCE_PATHS}
  use_backend gateways_inference if inference
  default_backend gateways

backend gateways_inference
  balance leastconn
  # Keep-alive to the replicas: a fresh connection per request (option http-server-close) cost
  # each gateway about 400 us of CPU per request here (docs/benchmarks.md).
  retry-on conn-failure empty-response junk-response response-timeout 503
  option httpchk GET /v2/health/ready
  http-check expect status 200
{http_servers}

backend gateways
  balance leastconn
  retry-on conn-failure
  # A deploy answers once every server replica holds the version (FLYWHEEL_DEPLOY_READY_TIMEOUT_S).
  timeout server {settings.deploy_ready_timeout_s + 60:.0f}s
  option httpchk GET /v2/health/ready
  http-check expect status 200
{http_servers}

frontend grpc
  bind {host}:{settings.gateway_grpc_port} proto h2
  default_backend gateways_grpc

backend gateways_grpc
  balance leastconn
  retry-on conn-failure empty-response
  option httpchk GET /v2/health/ready
  http-check expect status 200
{grpc_servers}

frontend stats
  bind {host}:{settings.load_balancer_stats_port}
  http-request use-service prometheus-exporter if {{ path /metrics }}
  stats enable
  stats uri /stats
  stats refresh 5s
"""


def load_balancer_service(settings: FlywheelSettings) -> ServiceSpec:
    folder = settings.var_path / "load-balancer"
    config = folder / "haproxy.cfg"

    def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config.write_text(render_haproxy_config(settings))

    stats = f"http://{settings.host}:{settings.load_balancer_stats_port}"
    return ServiceSpec(
        name="load-balancer",
        # -db: foreground, no daemon (the supervisor owns the process); -W would fork a master.
        argv=[haproxy_binary(), "-db", "-f", str(config)],
        probe=http_probe(f"{settings.gateway_url}/v2/health/ready"),
        urls={
            "http": settings.gateway_url,
            "grpc": f"{settings.host}:{settings.gateway_grpc_port}",
            "metrics": f"{stats}/metrics",
            "stats": f"{stats}/stats",
        },
        cwd=folder,
        prepare=prepare,
    )
