"""Private folders (runtime root, VM folders, the manager's home and socket folders): made 0700, and
refused with a clear error when another user made them, when they are a symbolic link, or when
others can write to them, since whoever controls one controls what our processes read from it."""

import os
import shutil

import pytest

from services.ipc import naming
from services.private_file import UnsafeFolder, private_folder


def test_made_0700_and_kept(tmp_path):
    path = private_folder(tmp_path / "new")
    assert os.stat(path).st_mode & 0o777 == 0o700
    (tmp_path / "loose").mkdir(mode=0o755)
    os.chmod(tmp_path / "loose", 0o755)
    private_folder(tmp_path / "loose")
    assert os.stat(tmp_path / "loose").st_mode & 0o777 == 0o700


def test_another_users_folder_is_refused(tmp_path, host_user):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    shutil.chown(theirs, user=host_user)
    with pytest.raises(UnsafeFolder, match=r"theirs belongs to uid \d+, not to this user"):
        private_folder(theirs)


def test_symlink_file_and_writable_folders_are_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("")
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(UnsafeFolder, match="is a symbolic link"):
        private_folder(tmp_path / "link")
    with pytest.raises(UnsafeFolder, match="is not a folder"):
        private_folder(tmp_path / "file")
    with pytest.raises(UnsafeFolder, match=r"writable by other users \(mode 777\)"):
        private_folder(tmp_path / "open")
    assert os.stat(tmp_path / "open").st_mode & 0o777 == 0o777      # left as it was


def test_runtime_root_and_vm_folder_taken_over_are_refused(tmp_path, host_user, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    root = tmp_path / "headbox"
    root.mkdir(mode=0o700)
    shutil.chown(root, user=host_user)
    with pytest.raises(UnsafeFolder, match="XDG_RUNTIME_DIR"):
        naming.endpoint("vm1", "control-vrdp")
    shutil.chown(root, user=os.geteuid())
    (root / "vm1").mkdir(mode=0o700)
    shutil.chown(root / "vm1", user=host_user)
    with pytest.raises(UnsafeFolder):
        naming.runtime_dir("vm1")
    assert naming.endpoint("vm2", "control-vrdp") == f"ipc://{root}/vm2/control-vrdp"
