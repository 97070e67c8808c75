"""The launch spec every process of a VM is handed (services/ipc/spec.py) and the VRDE settings in it
(services/ipc/vrde.py): VirtualBox's defaults, one-line refusals, one 0600 file that round-trips."""

import os
import stat

import msgpack
import pytest

from services.ipc.spec import Drive, LaunchSpec, SpecError
from services.ipc.vrde import ConfigError, VrdeConfig

HASH = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"


def test_vrde_defaults_are_virtualbox_defaults():
    config = VrdeConfig()
    assert (config.ports, config.address, config.auth_type, config.auth_library) == ("3389", "", "null", "VBoxAuth")
    assert (config.auth_timeout_ms, config.multicon, config.reusecon, config.enabled) == (5000, False, False, False)
    assert config.video_channel_quality == 75


@pytest.mark.parametrize("change, message", [
    ({"auth_type": "kerberos"}, "auth_type 'kerberos' is not one of null, external, guest"),
    ({"multicon": "yes"}, "'multicon' must be true or false"),
    ({"video_channel_quality": 5}, "video_channel_quality 5 is not within 10..100"),
    ({"users": {"john": "secret"}}, "the password of user 'john' is not a lowercase hex SHA-256"),
    ({"features": {"Client/DisableDisplay": 1}}, "'features' must map strings to strings"),
    ({"colour": "blue"}, "unknown field 'colour'"),
    ({"ports": "5000,x"}, "'x' in the port list '5000,x' is neither a port nor a range"),
    ({"ports": "13395-13393"}, "a range goes from low to high"),
])
def test_bad_vrde_values_are_refused_with_one_line(change, message):
    with pytest.raises(ConfigError) as error:
        VrdeConfig.from_dict({**VrdeConfig().to_dict(), **change})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_feature_switch_needs_exactly_1_and_property_wins():
    config = VrdeConfig(features={"Client/DisableDisplay": "1", "Client/DisableInput": "true"})
    assert config.feature("Client/DisableDisplay") and not config.feature("Client/DisableInput")
    config.properties["Client/DisableDisplay"] = ""
    assert not config.feature("Client/DisableDisplay")


def test_the_spec_round_trips_through_one_private_file(tmp_path):
    spec = LaunchSpec(vm_id="vm", memory_mib=512, accel="tcg", boot=("disk", "dvd"),
                      drives=[Drive(0, 0, "hdd", "/vms/a.vdi"), Drive(1, 0, "dvd", None)],
                      serial_log="/tmp/serial.log", cpuid=[[1, 2, 3, 4, 5]], incoming=True,
                      vrde=VrdeConfig(vm_name="vm", enabled=True, ports="5000,5010-5012", users={"john": HASH}))
    path = spec.save(str(tmp_path / "spec"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert LaunchSpec.load(path) == spec
    assert [p for p in os.listdir(tmp_path) if p != "spec"] == []      # no temporary left behind


def test_drives_parse_and_print_the_same():
    for text in ("1:0:dvd:/isos/demo.iso", "0:1:hdd:/vms/a b.vdi", "1:1:dvd"):
        assert Drive.parse(text).text() == text
    for text, message in (("2:0:dvd", "channel and unit 0 or 1"), ("0:0:tape", "hdd|dvd"),
                          ("0:0:hdd", "needs an image file")):
        with pytest.raises(SpecError, match=message):
            Drive.parse(text)


@pytest.mark.parametrize("data, message", [
    (b"\xc1", "not msgpack"),
    (msgpack.packb({"version": 99, "spec": {}}), "version 1"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "colour": "blue"}}), "unknown field 'colour'"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "accel": "hvf"}}), "unknown accelerator 'hvf'"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "memory_mib": 0}}), "0 MiB of RAM"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "vrde": {"ports": "x"}}}), "port list"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "cpuid": [[1, 2, 3]]}}), "bad CPUID override"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "drives": [{"channel": 2, "unit": 0, "kind": "dvd",
                                                                     "path": None}]}}), "bad drive"),
    (msgpack.packb({"version": 1, "spec": {"vm_id": "v", "drives": ["1:0:dvd"]}}), "the launch spec:"),
    (msgpack.packb({"version": 1, "spec": {}}), "the launch spec:"),
])
def test_a_bad_spec_is_refused_with_one_line(tmp_path, data, message):
    path = tmp_path / "spec"
    path.write_bytes(data)
    with pytest.raises(SpecError) as error:
        LaunchSpec.load(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(SpecError, match="cannot read"):
        LaunchSpec.load(str(tmp_path / "missing"))
