"""An X server for the real RDP clients the tests drive: Xvfb on a display it picks itself, without
a window manager, so client windows sit at 0,0 and take focus when told."""

import os
import subprocess
from pathlib import Path


def stop(process) -> None:
    """Terminates a child process (None or already ended is fine), killing it after 10 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Display:
    """Xvfb with its log in tmp; env runs a client on it with its own HOME (clients keep state there:
    FreeRDP's known hosts, rdesktop's licence)."""

    def __init__(self, tmp: Path, screen: str = "1024x768x24", env: dict | None = None):
        self.log = (tmp / "xvfb.log").open("w")
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", screen,
                                         "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                                        stdout=self.log, stderr=self.log)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.close()
            raise AssertionError("Xvfb did not report its display")
        self.name = f":{number}"
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.env = {**(os.environ if env is None else env), "DISPLAY": self.name, "HOME": str(self.home)}

    def xdotool(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, check=False)
        if check:
            assert result.returncode == 0, f"xdotool {' '.join(args)}: {result.stderr.strip()}"
        return result.stdout

    def close(self) -> None:
        stop(self.process)
        self.log.close()
