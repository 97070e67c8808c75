"""VBoxManage's command line turned into one control-API request, without I/O (docs/control-api.md).

`parse(argv, cwd, read_secret)` returns a Call or raises UsageError with VirtualBox's one-line message."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from .options import (
    Arity,
    Call,
    UsageError,
    absolute_path,
    hexadecimal,
    integer,
    name_value,
    on_off,
    one_of,
    positional_values,
    scan,
)

BOOT_DEVICES = ("none", "floppy", "dvd", "disk", "net")
NIC_ATTACHMENTS = ("none", "null", "nat", "bridged", "intnet", "hostonly", "natnetwork", "generic")
NIC_TYPES = ("Am79C970A", "Am79C973", "Am79C960", "82540EM", "82543GC", "82545EM", "virtio")
AUTH_TYPES = ("null", "external", "guest")
ACCELS = ("kvm", "tcg", "auto")
LIST_WHAT = ("ostypes", "vms", "runningvms", "hdds", "dvds", "systemproperties")
STORAGE_BUSES = ("ide", "sata")
CONTROLLERS = ("PIIX3", "PIIX4", "IntelAhci")
MEDIUM_KINDS = ("disk", "dvd")
PROPERTIES = {"machinefolder": "machinefolder", "vrdeauthlibrary": "vrdeauthlibrary",
              "vrdpauthlibrary": "vrdeauthlibrary", "controlendpoint": "controlendpoint"}
CONTROLVM_SIMPLE = ("pause", "resume", "reset", "poweroff", "acpipowerbutton", "savestate")
PORTS_SYNTAX = re.compile(r"default|\d+(-\d+)?(,\d+(-\d+)?)*")
UUID_SYNTAX = re.compile(r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?")


def _medium(cwd: str, value: str) -> str:
    """A medium named by UUID or a keyword stays as it is; a file name becomes absolute."""
    if value.lower() in ("none", "emptydrive") or UUID_SYNTAX.fullmatch(value):
        return value.lower() if value.lower() in ("none", "emptydrive") else value.strip("{}")
    return absolute_path(cwd, value)


# ------------------------------------------------------------------------------------------------
# modifyvm: every flag is one entry of the `changes` map

class _ModifyVm:
    """Collects modifyvm flags into the control API's `changes` map (canonical names)."""

    def __init__(self, read_secret: Callable[[str], str]):
        self.read_secret = read_secret
        self.changes: dict = {}

    def handlers(self) -> dict[str, tuple[Arity, Callable]]:
        c = self.changes
        handlers: dict[str, tuple[Arity, Callable]] = {
            "--name": (1, lambda o, v: c.__setitem__("name", v[0])),
            "--ostype": (1, lambda o, v: c.__setitem__("ostype", v[0])),
            "--memory": (1, lambda o, v: c.__setitem__("memory", integer(o, v[0], 1))),
            "--cpus": (1, lambda o, v: c.__setitem__("cpus", integer(o, v[0], 1))),
            "--acpi": (1, lambda o, v: c.__setitem__("acpi", on_off(o, v[0]))),
            "--usb": (1, lambda o, v: c.__setitem__("usb", on_off(o, v[0]))),
            "--accel": (1, lambda o, v: c.__setitem__("accel", one_of(o, v[0], ACCELS))),
            "--teleporter": (1, lambda o, v: c.__setitem__("teleporter", on_off(o, v[0]))),
            "--teleporterport": (1, lambda o, v: c.__setitem__("teleporter_port", integer(o, v[0]))),
            "--teleporteraddress": (1, lambda o, v: c.__setitem__("teleporter_address", v[0])),
            "--teleporterpassword": (1, lambda o, v: c.__setitem__("teleporter_password", v[0])),
            "--teleporterpasswordfile": (1, lambda o, v: c.__setitem__("teleporter_password",
                                                                        self.read_secret(v[0]))),
            "--cpuid": (5, self._cpuid),
            "--cpuidset": (5, self._cpuid),
            "--cpuidremove": (1, self._cpuid_remove),
            "--cpuidremoveall": (0, lambda o, v: c.__setitem__("cpuid", None)),
            "--uart1": (lambda first: 1 if first.lower() == "off" else 2, self._uart),
            "--uartmode1": (lambda first: 1 if first.lower() == "disconnected" else 2, self._uart_mode),
        }
        for n in range(1, 5):
            handlers[f"--boot{n}"] = (1, lambda o, v, n=n: c.__setitem__(f"boot{n}", one_of(o, v[0], BOOT_DEVICES)))
        for n in range(1, 9):
            handlers.update(self._adapter_handlers(n))
        vrde: dict[str, tuple[Arity, Callable]] = {
            "": (1, lambda o, v: c.__setitem__("vrde", on_off(o, v[0]))),
            "port": (1, self._vrde_ports),
            "address": (1, lambda o, v: c.__setitem__("vrde_address", v[0])),
            "authtype": (1, lambda o, v: c.__setitem__("vrde_auth_type", one_of(o, v[0], AUTH_TYPES))),
            "authlibrary": (1, lambda o, v: c.__setitem__("vrde_auth_library", v[0])),
            "multicon": (1, lambda o, v: c.__setitem__("vrde_multicon", on_off(o, v[0]))),
            "reusecon": (1, lambda o, v: c.__setitem__("vrde_reusecon", on_off(o, v[0]))),
            "videochannel": (1, lambda o, v: c.__setitem__("vrde_video_channel", on_off(o, v[0]))),
            "videochannelquality": (1, self._video_quality),
            "property": (1, self._vrde_property),
        }
        for suffix, handler in vrde.items():
            # VirtualBox 3 said --vrdp*, VirtualBox 4 and later --vrde*: both set the same thing.
            handlers[f"--vrde{suffix}"] = handlers[f"--vrdp{suffix}"] = handler
        return handlers

    def _adapter_handlers(self, n: int) -> dict[str, tuple[Arity, Callable]]:
        """Adapter n's options, under VirtualBox 6's names and 7's dashed ones (--nic-type1)."""
        c = self.changes
        by_key: dict[str, tuple[str, tuple[Arity, Callable]]] = {
            "nic": ("nic", (1, lambda o, v: c.__setitem__(f"nic{n}", one_of(o, v[0], NIC_ATTACHMENTS)))),
            "nictype": ("nic-type", (1, lambda o, v: c.__setitem__(f"nictype{n}", one_of(o, v[0], NIC_TYPES)))),
            "macaddress": ("mac-address", (1, lambda o, v: c.__setitem__(f"macaddress{n}", v[0]))),
            "cableconnected": ("cable-connected", (1, lambda o, v: c.__setitem__(f"cableconnected{n}",
                                                                               on_off(o, v[0])))),
            # `--natpf1 delete <name>` takes two values; a rule is one (it always has commas).
            "natpf": ("nat-pf", (lambda first: 2 if first == "delete" else 1,
                                 lambda o, v: c.setdefault(f"natpf{n}", []).append(
                                     ["delete", v[1]] if len(v) == 2 else ["add", v[0]]))),
            "natnet": ("nat-net", (1, lambda o, v: c.__setitem__(f"natnet{n}", v[0]))),
            "natdnshostresolver": ("nat-dns-host-resolver", (1, lambda o, v: c.__setitem__(
                f"natdnshostresolver{n}", on_off(o, v[0])))),
            "natdnsproxy": ("nat-dns-proxy", (1, lambda o, v: c.__setitem__(f"natdnsproxy{n}", on_off(o, v[0])))),
            "nattftpprefix": ("nat-tftp-prefix", (1, lambda o, v: c.__setitem__(f"nattftpprefix{n}", v[0]))),
            "nattftpfile": ("nat-tftp-file", (1, lambda o, v: c.__setitem__(f"nattftpfile{n}", v[0]))),
        }
        handlers = {}
        for key, (dashed, handler) in by_key.items():
            handlers[f"--{key}{n}"] = handlers[f"--{dashed}{n}"] = handler
        return handlers

    def _vrde_ports(self, option: str, values: list[str]) -> None:
        ports = values[0].replace(" ", "")
        if not PORTS_SYNTAX.fullmatch(ports):
            raise UsageError(f"Invalid {option} argument '{values[0]}' (ports like 3389 or 5000,5010-5012)")
        self.changes["vrde_ports"] = ports

    def _video_quality(self, option: str, values: list[str]) -> None:
        quality = integer(option, values[0])
        if not 10 <= quality <= 100:
            raise UsageError(f"Invalid {option} argument '{values[0]}' (10 to 100)")
        self.changes["vrde_video_channel_quality"] = quality

    def _vrde_property(self, option: str, values: list[str]) -> None:
        name, value = name_value(option, values[0])
        self.changes.setdefault("vrde_properties", {})[name] = value

    def _cpuid(self, option: str, values: list[str]) -> None:
        leaf = hexadecimal(option, values[0])
        registers = [hexadecimal(option, value) for value in values[1:]]
        cpuid = self.changes.get("cpuid") or {}
        cpuid[f"{leaf:08x}"] = registers
        self.changes["cpuid"] = cpuid

    def _cpuid_remove(self, option: str, values: list[str]) -> None:
        cpuid = self.changes.get("cpuid") or {}
        cpuid[f"{hexadecimal(option, values[0]):08x}"] = None
        self.changes["cpuid"] = cpuid

    def _uart(self, option: str, values: list[str]) -> None:
        if values[0].lower() == "off":
            self.changes["uart1"] = "off"
            return
        io = integer(option, values[0] if values[0].lower().startswith("0x") else "0x" + values[0])
        irq = integer(option, values[1])
        if not 0 < io <= 0xFFFF or not 0 < irq < 16:
            raise UsageError(f"Invalid {option} argument '{values[0]} {values[1]}' (I/O base and IRQ 1-15)")
        self.changes["uart1"] = [io, irq]

    def _uart_mode(self, option: str, values: list[str]) -> None:
        mode = values[0].lower()
        if mode == "disconnected":
            self.changes["uartmode1"] = "disconnected"
        elif mode == "file":
            self.changes["uartmode1"] = ["file", values[1]]
        else:
            raise UsageError(f"Invalid {option} argument '{values[0]}' (disconnected or file <path>)")


def _modifyvm(args: list[str], cwd: str, read_secret: Callable[[str], str]) -> Call:
    collector = _ModifyVm(read_secret)
    handlers = collector.handlers()
    options, positionals = scan(args, {name: arity for name, (arity, _) in handlers.items()})
    vm, = positional_values("modifyvm", positionals, ("a VM name or UUID",))
    if not options:
        raise UsageError("modifyvm: no settings to change")
    for option, values in options:
        handlers[option][1](option, values)
    changes = collector.changes
    if isinstance(changes.get("uartmode1"), list):
        changes["uartmode1"] = ["file", absolute_path(cwd, changes["uartmode1"][1])]
    return Call("modifyvm", {"vm": vm, "changes": changes})


# ------------------------------------------------------------------------------------------------
# The other commands

def _createvm(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--name": 1, "--ostype": 1, "--register": 0, "--basefolder": 1,
                                       "--default": 0})
    positional_values("createvm", positionals, ())
    given = dict(options)
    if "--name" not in given:
        raise UsageError("createvm: --name is required")
    fields = {"name": given["--name"][0], "register": "--register" in given}
    if "--ostype" in given:
        fields["ostype"] = given["--ostype"][0]
    if "--basefolder" in given:
        fields["basefolder"] = absolute_path(cwd, given["--basefolder"][0])
    return Call("createvm", fields, "createvm", {"register": fields["register"]})


def _registervm(args, cwd, read_secret) -> Call:
    _, positionals = scan(args, {})
    path, = positional_values("registervm", positionals, ("a settings file",))
    return Call("registervm", {"path": absolute_path(cwd, path)})


def _unregistervm(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--delete": 0})
    vm, = positional_values("unregistervm", positionals, ("a VM name or UUID",))
    return Call("unregistervm", {"vm": vm, "delete": bool(options)})


def _list(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--long": 0, "--sorted": 0})
    what, = positional_values("list", positionals, ("what to list (" + ", ".join(LIST_WHAT) + ")",))
    what = one_of("list", what, LIST_WHAT)
    return Call("list", {"what": what}, "list", {"what": what, "long": bool(options)})


def _createmedium(args, cwd, read_secret, kind_given: bool = True) -> Call:
    if kind_given and args and not args[0].startswith("-"):
        kind = one_of("createmedium", args[0], ("disk",))
        args = args[1:]
    else:
        kind = "disk"
    options, positionals = scan(args, {"--filename": 1, "--size": 1, "--format": 1, "--variant": 1,
                                       "--remember": 0})
    positional_values("createmedium", positionals, ())
    given = dict(options)
    for required in ("--filename", "--size"):
        if required not in given:
            raise UsageError(f"createmedium: {required} is required")
    filename = absolute_path(cwd, given["--filename"][0])
    fmt = one_of("--format", given.get("--format", ["VDI"])[0], ("VDI",))
    if not os.path.splitext(filename)[1]:
        filename += ".vdi"          # VirtualBox names the file after its format when there is no extension
    variant = one_of("--variant", given.get("--variant", ["Standard"])[0], ("Standard", "Fixed"))
    fields = {"kind": kind, "filename": filename, "size_mb": integer("--size", given["--size"][0], 1),
              "format": fmt, "variant": variant, "remember": "--remember" in given}
    return Call("createmedium", fields, "createmedium")


def _storagectl(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--name": 1, "--add": 1, "--controller": 1, "--remove": 0})
    vm, = positional_values("storagectl", positionals, ("a VM name or UUID",))
    given = dict(options)
    if "--name" not in given:
        raise UsageError("storagectl: --name is required")
    fields = {"vm": vm, "name": given["--name"][0], "remove": "--remove" in given}
    if "--add" in given:
        fields["add"] = one_of("--add", given["--add"][0], STORAGE_BUSES)
    if "--controller" in given:
        fields["controller"] = one_of("--controller", given["--controller"][0], CONTROLLERS)
    if not fields["remove"] and "add" not in fields:
        raise UsageError("storagectl: --add or --remove is required")
    return Call("storagectl", fields)


def _storageattach(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--storagectl": 1, "--port": 1, "--device": 1, "--type": 1,
                                       "--medium": 1})
    vm, = positional_values("storageattach", positionals, ("a VM name or UUID",))
    given = dict(options)
    for required in ("--storagectl", "--medium"):
        if required not in given:
            raise UsageError(f"storageattach: {required} is required")
    fields = {"vm": vm, "storagectl": given["--storagectl"][0],
              "port": integer("--port", given.get("--port", ["0"])[0]),
              "device": integer("--device", given.get("--device", ["0"])[0]),
              "medium": _medium(cwd, given["--medium"][0])}
    if "--type" in given:
        fields["type"] = one_of("--type", given["--type"][0], ("hdd", "dvddrive"))
    elif fields["medium"] not in ("none", "emptydrive"):
        raise UsageError("storageattach: --type is required")
    return Call("storageattach", fields)


def _openmedium(args, cwd, read_secret) -> Call:
    _, positionals = scan(args, {})
    kind, path = positional_values("openmedium", positionals, ("disk or dvd", "a file"))
    return Call("openmedium", {"kind": one_of("openmedium", kind, MEDIUM_KINDS), "path": absolute_path(cwd, path)})


def _closemedium(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--delete": 0})
    if len(positionals) == 1:
        positionals = ["disk"] + positionals      # 6.x lets the kind be left out
    kind, target = positional_values("closemedium", positionals, ("disk or dvd", "a UUID or file"))
    return Call("closemedium", {"kind": one_of("closemedium", kind, MEDIUM_KINDS),
                                "target": _medium(cwd, target), "delete": bool(options)})


def _showvminfo(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--machinereadable": 0, "--details": 0})
    vm, = positional_values("showvminfo", positionals, ("a VM name or UUID",))
    return Call("showvminfo", {"vm": vm}, "showvminfo",
                {"machinereadable": "--machinereadable" in dict(options)})


def _startvm(args, cwd, read_secret) -> Call:
    options, positionals = scan(args, {"--type": 1})
    vm, = positional_values("startvm", positionals, ("a VM name or UUID",))
    kind = one_of("--type", dict(options).get("--type", ["headless"])[0],
                   ("headless", "vrdp", "gui", "sdl", "separate"))
    if kind not in ("headless", "vrdp"):
        raise UsageError(f"no display on this server; use --type headless (not '{kind}')")
    return Call("startvm", {"vm": vm, "type": kind}, "startvm", {"vm": vm})


def _controlvm(args, cwd, read_secret) -> Call:
    if len(args) < 2:
        raise UsageError("controlvm: a VM name or UUID and an action are required")
    vm, action, rest = args[0], args[1].lower(), args[2:]
    if action in CONTROLVM_SIMPLE:
        positional_values(f"controlvm {action}", rest, ())
        return Call("controlvm", {"vm": vm, "action": action, "args": []}, "job")
    if action == "screenshotpng":
        path, = positional_values("controlvm screenshotpng", rest, ("a file",))
        return Call("controlvm", {"vm": vm, "action": action, "args": [absolute_path(cwd, path)]})
    if action == "keyboardputscancode":
        if not rest:
            raise UsageError("controlvm keyboardputscancode: at least one scancode is required")
        for code in rest:
            if not re.fullmatch(r"[0-9a-fA-F]{1,2}", code):
                raise UsageError(f"'{code}' is not a hex byte")
        return Call("controlvm", {"vm": vm, "action": action, "args": [code.lower() for code in rest]})
    if action in ("vrde", "vrdp"):
        value, = positional_values(f"controlvm {action}", rest, ("on or off",))
        return Call("controlvm", {"vm": vm, "action": "vrde", "args": ["on" if on_off(action, value) else "off"]})
    if action in ("vrdeport", "vrdpport"):
        ports, = positional_values(f"controlvm {action}", rest, ("ports",))
        if not PORTS_SYNTAX.fullmatch(ports):
            raise UsageError(f"Invalid {action} argument '{ports}' (ports like 3389 or 5000,5010-5012)")
        return Call("controlvm", {"vm": vm, "action": "vrdeport", "args": [ports]})
    if action == "teleport":
        return _teleport(vm, rest, read_secret)
    if re.fullmatch(r"setlinkstate[1-8]", action):
        value, = positional_values(f"controlvm {action}", rest, ("on or off",))
        return Call("controlvm", {"vm": vm, "action": action, "args": ["on" if on_off(action, value) else "off"]})
    if re.fullmatch(r"natpf[1-8]", action):
        if rest[:1] == ["delete"]:
            _, name = positional_values(f"controlvm {action} delete", rest, ("delete", "a rule name"))
            return Call("controlvm", {"vm": vm, "action": action, "args": ["delete", name]})
        rule, = positional_values(f"controlvm {action}", rest, ("a rule (name,tcp|udp,[hostip],hostport,[guestip],"
                                                           "guestport) or delete <name>",))
        return Call("controlvm", {"vm": vm, "action": action, "args": [rule]})
    raise UsageError(f"Invalid parameter '{args[1]}'")


def _teleport(vm: str, args: list[str], read_secret: Callable[[str], str]) -> Call:
    options, positionals = scan(args, {"--host": 1, "--port": 1, "--password": 1, "--passwordfile": 1,
                                       "--maxdowntime": 1})
    positional_values("controlvm teleport", positionals, ())
    given = dict(options)
    if "--host" not in given or "--port" not in given:
        raise UsageError("controlvm teleport: --host and --port are required")
    teleport = {"host": given["--host"][0], "port": integer("--port", given["--port"][0], 1)}
    if "--password" in given:
        teleport["password"] = given["--password"][0]
    elif "--passwordfile" in given:
        teleport["password"] = read_secret(given["--passwordfile"][0])
    if "--maxdowntime" in given:
        teleport["maxdowntime"] = integer("--maxdowntime", given["--maxdowntime"][0], 1)
    return Call("controlvm", {"vm": vm, "action": "teleport", "args": teleport}, "job")


def _setextradata(args, cwd, read_secret) -> Call:
    _, positionals = scan(args, {})
    target, key, value = positional_values("setextradata", positionals, ("a VM or global", "a key", "a value"), 1)
    return Call("setextradata", {"target": target, "key": key, "value": value})


def _getextradata(args, cwd, read_secret) -> Call:
    _, positionals = scan(args, {})
    target, key = positional_values("getextradata", positionals, ("a VM or global", "a key or enumerate"))
    enumerate_all = key.lower() == "enumerate"
    return Call("getextradata", {"target": target, "key": None if enumerate_all else key}, "getextradata",
                {"enumerate": enumerate_all})


def _setproperty(args, cwd, read_secret) -> Call:
    _, positionals = scan(args, {})
    name, value = positional_values("setproperty", positionals, ("a property", "a value"))
    if name.lower() not in PROPERTIES:
        raise UsageError(f"Invalid parameter '{name}'")
    name = PROPERTIES[name.lower()]
    if name == "machinefolder" and value != "default":
        value = absolute_path(cwd, value)
    return Call("setproperty", {"name": name, "value": value})


COMMANDS: dict[str, Callable] = {
    "createvm": _createvm, "registervm": _registervm, "unregistervm": _unregistervm, "list": _list,
    "modifyvm": _modifyvm, "createmedium": _createmedium,
    "createhd": lambda args, cwd, read_secret: _createmedium(args, cwd, read_secret, kind_given=False),
    "storagectl": _storagectl, "storageattach": _storageattach, "openmedium": _openmedium,
    "closemedium": _closemedium, "showvminfo": _showvminfo, "startvm": _startvm, "controlvm": _controlvm,
    "setextradata": _setextradata, "getextradata": _getextradata, "setproperty": _setproperty,
}


def parse(argv: list[str], cwd: str, read_secret: Callable[[str], str]) -> Call:
    """argv without the program name and the global options; read_secret(path or "stdin") gives the
    first line of a password file (so a password never needs to be on the command line)."""
    if not argv:
        raise UsageError("a command is required (" + ", ".join(sorted(COMMANDS)) + ")")
    command = argv[0].lower()
    if command not in COMMANDS:
        raise UsageError(f"Invalid command '{argv[0]}'")
    return COMMANDS[command](list(argv[1:]), cwd, read_secret)
