"""`python -m services.teleport --spec PATH`: the VM's teleport program (services/teleport/service.py),
as the manager's supervisor runs it. `python -m services.teleport target|source ...`: one end of a
teleport for a VM whose processes run on this host, by hand (benchmarks use it)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from services.ipc.spec import LaunchSpec, SpecError
from services.teleport import wire
from services.teleport.service import serve
from services.teleport.source import DEFAULT_MAX_DOWNTIME_MS, teleport_out
from services.teleport.target import DEFAULT_WAIT_S, teleport_in
from services.teleport.vm import TeleportError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.teleport")
    parser.add_argument("--spec", help="serve the VM of this launch spec (services/ipc/spec.py)")
    sub = parser.add_subparsers(dest="end")
    target = sub.add_parser("target", help="wait for a VM on a port (the VM was started --incoming)")
    target.add_argument("--vm-id", required=True)
    target.add_argument("--address", default="")
    target.add_argument("--port", type=int, required=True)
    target.add_argument("--password", default="")
    target.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS")
    source = sub.add_parser("source", help="send a running VM to a waiting target")
    source.add_argument("--vm-id", required=True)
    source.add_argument("--host", required=True)
    source.add_argument("--port", type=int, required=True)
    source.add_argument("--password", default="")
    source.add_argument("--maxdowntime", type=int, default=DEFAULT_MAX_DOWNTIME_MS, metavar="MS")
    for end in (target, source):
        end.add_argument("--config", default="{}", help="the VM's hardware as JSON (hardware_config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s teleport %(levelname)s %(message)s")
    if args.end is None:
        if not args.spec:
            parser.error("--spec PATH, or target|source")
        try:
            spec = LaunchSpec.load_for_run(args.spec)
        except SpecError as error:
            print(f"headbox-teleport: error: {error}", file=sys.stderr)
            return 2
        serve(spec)
        return 0
    config = json.loads(args.config)
    try:
        if args.end == "target":
            result = teleport_in(args.vm_id, config, args.address, args.port, wire.hash_password(args.password),
                                 wait_s=args.wait, on_listening=lambda port: print(f"listening {port}", flush=True))
            print(json.dumps({"peer": result.peer, "resumed": result.resumed}), flush=True)
        else:
            stats = teleport_out(args.vm_id, config, args.host, args.port, args.password, args.maxdowntime)
            print(json.dumps({"rounds": stats.rounds, "bytes_sent": stats.bytes_sent,
                              "downtime_ms": round(stats.downtime_ms, 1), "total_ms": round(stats.total_ms, 1),
                              "throttle": stats.throttle, "round_pages": stats.round_pages,
                              "phases": stats.phases}), flush=True)
    except TeleportError as error:
        print(f"headbox-teleport: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
