"""``python -m serving.backends.tfserving.runtime``: the TF-Serving-protocol model server.

Flags follow ``tensorflow_model_server`` so the same command line works for both.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import text_format
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.backends.tfserving.runtime.grpc_service import ModelService, PredictionService
from serving.backends.tfserving.runtime.manager import ServableManager
from serving.backends.tfserving.runtime.monitoring import MonitoringConfig, RuntimeMetrics
from serving.backends.tfserving.runtime.rest import create_rest_app

logger = logging.getLogger("flywheel.tfserving")


def read_config(path: Path) -> Any:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(path.read_text(), config)
    return config


async def serve(args: argparse.Namespace) -> None:
    manager = ServableManager()
    config_path: Path | None = args.model_config_file
    config_mtime = 0.0
    if config_path is not None:
        manager.apply_config(read_config(config_path))
        config_mtime = config_path.stat().st_mtime
    elif args.model_name and args.model_base_path:
        single = model_server_config_pb2.ModelServerConfig()
        model = single.model_config_list.config.add(name=args.model_name, base_path=str(args.model_base_path))
        model.model_platform = "tensorflow"
        manager.apply_config(single)

    def remember_reload(config: Any) -> None:
        # A config pushed over gRPC wins over the file until the file changes again (as in TF Serving).
        nonlocal config_mtime
        if config_path is not None and config_path.exists():
            config_mtime = config_path.stat().st_mtime

    monitoring = (
        MonitoringConfig.read(args.monitoring_config_file)
        if args.monitoring_config_file
        else MonitoringConfig()
    )
    metrics = RuntimeMetrics() if monitoring.enabled else None
    grpc_server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, metrics), grpc_server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(manager, remember_reload), grpc_server
    )
    grpc_server.add_insecure_port(f"{args.host}:{args.port}")
    await grpc_server.start()
    runner = web.AppRunner(create_rest_app(manager, metrics, monitoring.path), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.rest_api_port).start()
    logger.info(
        "serving gRPC on %s:%d and REST on %s:%d", args.host, args.port, args.host, args.rest_api_port
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def poll() -> None:
        nonlocal config_mtime
        while not stop.is_set():
            await asyncio.sleep(args.file_system_poll_wait_seconds)
            if (
                config_path is not None
                and config_path.exists()
                and config_path.stat().st_mtime != config_mtime
            ):
                config_mtime = config_path.stat().st_mtime
                logger.info("model config file changed: reloading")
                await asyncio.to_thread(manager.apply_config, read_config(config_path))
            else:
                await asyncio.to_thread(manager.reconcile)

    poller = asyncio.create_task(poll())
    await stop.wait()
    poller.cancel()
    await grpc_server.stop(grace=2)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TF-Serving-protocol model server (Flywheel)")
    parser.add_argument("--host", default="127.0.0.1", help="address for both ports (loopback by default)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port")
    parser.add_argument("--model_config_file", type=Path, default=None)
    parser.add_argument("--model_name", default=None)
    parser.add_argument("--model_base_path", type=Path, default=None)
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    parser.add_argument(
        "--monitoring_config_file",
        type=Path,
        default=None,
        help="prometheus_config { enable: true path: ... }",
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds", type=float, default=1.0, help="kept for parity"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
