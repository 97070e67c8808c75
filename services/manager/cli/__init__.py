"""The VirtualBox-compatible commands: VBoxManage (argv -> manager requests -> VirtualBox's output)
and VBoxHeadless/VBoxVRDP (one VM in the foreground). Kept light: `list vms` must start fast."""
