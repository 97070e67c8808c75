"""vrde.json: VirtualBox's defaults, validation with one-line errors, atomic 0600 saves, reload on change."""

import json
import os
import stat

import pytest

from services.vrdp.config import ConfigError, ConfigWatcher, VrdeConfig

HASH = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"


def test_defaults_are_virtualbox_defaults():
    config = VrdeConfig()
    assert (config.ports, config.address, config.auth_type, config.auth_library) == ("3389", "", "null", "VBoxAuth")
    assert (config.auth_timeout_ms, config.multicon, config.reusecon, config.enabled) == (5000, False, False, False)
    assert config.video_channel_quality == 75


def test_save_then_load_round_trips_with_mode_0600(tmp_path):
    path = tmp_path / "vrde.json"
    config = VrdeConfig(vm_name="vm", vm_uuid="u", enabled=True, ports="5000,5010-5012", multicon=True,
                        properties={"Security/Method": "TLS"}, features={"Client/DisableInput": "1"},
                        users={"john": HASH}, state_dir=str(tmp_path))
    config.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert VrdeConfig.load(str(path)) == config
    assert [p for p in os.listdir(tmp_path) if p != "vrde.json"] == []  # no temporary left behind


@pytest.mark.parametrize("change, message", [
    ({"auth_type": "kerberos"}, "auth_type 'kerberos' is not one of null, external, guest"),
    ({"multicon": "yes"}, "'multicon' must be true or false"),
    ({"video_channel_quality": 5}, "video_channel_quality 5 is not within 10..100"),
    ({"users": {"john": "secret"}}, "the password of user 'john' is not a lowercase hex SHA-256"),
    ({"features": {"Client/DisableDisplay": 1}}, "'features' must map strings to strings"),
    ({"colour": "blue"}, "unknown field 'colour'"),
    ({"ports": " "}, "ports is empty"),
])
def test_bad_values_are_refused_with_one_line(tmp_path, change, message):
    path = tmp_path / "vrde.json"
    path.write_text(json.dumps({**VrdeConfig().to_dict(), **change}))
    with pytest.raises(ConfigError) as error:
        VrdeConfig.load(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        VrdeConfig.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        VrdeConfig.load(str(tmp_path / "bad.json"))


def test_save_refuses_a_bad_config_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "vrde.json"
    VrdeConfig(ports="5000").save(str(path))
    with pytest.raises(ConfigError):
        VrdeConfig(auth_type="bad").save(str(path))
    assert VrdeConfig.load(str(path)).ports == "5000"


def test_feature_switch_needs_exactly_1_and_property_wins():
    config = VrdeConfig(features={"Client/DisableDisplay": "1", "Client/DisableInput": "true"})
    assert config.feature("Client/DisableDisplay") and not config.feature("Client/DisableInput")
    config.properties["Client/DisableDisplay"] = ""
    assert not config.feature("Client/DisableDisplay")


def test_watcher_sees_a_changed_file_and_reports_a_bad_one(tmp_path):
    path = tmp_path / "vrde.json"
    VrdeConfig(ports="5000").save(str(path))
    watcher = ConfigWatcher(str(path))
    assert watcher.poll() is None
    VrdeConfig(ports="5001", multicon=True).save(str(path))
    new = watcher.poll()
    assert new is not None and new.ports == "5001" and new.multicon
    assert watcher.poll() is None
    path.write_text("{not json")
    with pytest.raises(ConfigError):
        watcher.poll()
    assert watcher.poll() is None and watcher.config.ports == "5001"  # the last good one stays
