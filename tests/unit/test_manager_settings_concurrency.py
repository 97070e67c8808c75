"""Twenty processes change one VM's settings at once: every change survives and the files stay
well-formed, because each read-modify-write re-reads the files under one flock."""

import multiprocessing
import xml.etree.ElementTree as ET

from services.manager.settings import Settings

WORKERS = 20


def _worker(home, index, barrier, failures):
    try:
        settings = Settings(home)
        barrier.wait(timeout=30)
        settings.modifyvm(vm="shared", changes={"vrde_properties": {f"Custom/P{index}": str(index)}})
        settings.setextradata(target="shared", key=f"Worker/{index}", value=str(index))
        settings.setextradata(target="global", key=f"Worker/{index}", value=str(index))
        settings.modifyvm(vm="shared", changes={"cpuid": {f"{0x40000000 + index:x}": [index, 0, 0, 0]}})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        failures.put(f"{index}: {exc!r}")


def test_twenty_processes_lose_no_change(tmp_path):
    home = str(tmp_path / "home")
    path = Settings(home).createvm(name="shared", register=True)["settings_file"]
    ctx = multiprocessing.get_context("fork")
    barrier, failures = ctx.Barrier(WORKERS), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(home, i, barrier, failures)) for i in range(WORKERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * WORKERS
    assert failures.empty(), failures.get()

    settings = Settings(home)
    info = settings.showvminfo(vm="shared")
    for i in range(WORKERS):
        assert info["vrde"]["properties"][f"Custom/P{i}"] == str(i)
        assert settings.getextradata(target="shared", key=f"Worker/{i}") == str(i)
        assert settings.getextradata(target="global", key=f"Worker/{i}") == str(i)
        assert info["cpuid"][f"{0x40000000 + i:08x}"] == [i, 0, 0, 0]
    ET.parse(path)
    ET.parse(f"{home}/Headbox.xml")
    assert settings.list(what="vms") == [{"name": "shared", "uuid": info["uuid"]}]


def test_threads_of_one_process_lose_no_change_either(tmp_path):
    """The daemon serves requests from a pool of threads sharing one Settings."""
    import threading
    settings = Settings(str(tmp_path / "home"))
    settings.createvm(name="shared", register=True)
    errors = []

    def change(index):
        try:
            settings.setextradata(target="shared", key=f"Thread/{index}", value=str(index))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
    threads = [threading.Thread(target=change, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(settings.getextradata(target="shared", key=None)) == WORKERS
