"""The model agent: one beside every model-server replica; the server pulls, nobody pushes.

It reads the routing specs (and staged deploys) in the store, works out which versions its
server must hold, fetches and verifies them into that server's own repository folder, loads and
unloads them through the server's API, and reports per-version readiness to the store
(``agents/<kind>/<replica>.json``, which the gateway and the rollout controller read) and on its
own ``/v1/agent/status`` and ``/metrics``. See docs/architecture.md, "Model agents".
"""
