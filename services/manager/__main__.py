"""`python -m services.manager [--home DIR] [--foreground] [--idle-exit S] [--tcp tcp://HOST:PORT]`.

Started on demand by the client (detached, exits when idle) or run in the foreground (the appliance)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from services.manager.client import default_home
from services.private_file import private_folder


def idle_exit_seconds(args) -> float | None:
    """--idle-exit wins; a foreground or supervised manager never idles out unless told to; an
    on-demand one does after $HEADBOX_IDLE_EXIT (default 30) seconds."""
    if args.idle_exit is not None:
        return args.idle_exit if args.idle_exit > 0 else None
    if args.foreground or os.environ.get("SUPERVISOR_ENABLED"):
        return None
    try:
        return float(os.environ.get("HEADBOX_IDLE_EXIT", "30"))
    except ValueError:
        return 30.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="headbox-manager", description="The Headbox manager daemon.")
    parser.add_argument("--home", help="settings home (default: $VBOX_USER_HOME, else ~/.config/Headbox)")
    parser.add_argument("--foreground", action="store_true", help="log to stderr; no idle exit")
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS",
                        help="exit after this long without requests or running VMs (0: never)")
    parser.add_argument("--tcp", metavar="tcp://ADDR:PORT", help="also listen here, CurveZMQ only")
    args = parser.parse_args(argv)
    if args.tcp and not args.tcp.startswith("tcp://"):
        parser.error(f"--tcp wants tcp://ADDR:PORT, not {args.tcp!r}")
    home = os.path.abspath(args.home or default_home())
    try:
        os.makedirs(os.path.dirname(home), mode=0o700, exist_ok=True)
        private_folder(home)
    except OSError as error:
        print(f"headbox-manager: error: the settings home {error}", file=sys.stderr)
        return 1
    os.umask(0o077)
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    if args.foreground or os.environ.get("SUPERVISOR_ENABLED"):
        logging.basicConfig(level=logging.INFO, format=fmt)
    else:
        logging.basicConfig(level=logging.INFO, format=fmt, filename=os.path.join(home, "manager.log"))
    logging.getLogger("headbox.manager.zap").setLevel(logging.WARNING)
    if os.environ.get("HEADBOX_DEBUG"):
        logging.getLogger("headbox").setLevel(logging.DEBUG)
    from services.manager.daemon import AlreadyRunning, Daemon, PidLock
    try:
        lock = PidLock(home)
    except AlreadyRunning as error:
        print(f"headbox-manager: error: {error}", file=sys.stderr)
        return 1
    try:
        daemon = Daemon(home, idle_exit=idle_exit_seconds(args), tcp=args.tcp)

        def stop(signum, frame):
            logging.getLogger("headbox.manager").info("%s: exiting once no request is pending",
                                                      signal.Signals(signum).name)
            daemon.exiting = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        daemon.serve()
    except Exception as error:
        logging.getLogger("headbox.manager").exception("the manager failed")
        print(f"headbox-manager: error: {error}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
