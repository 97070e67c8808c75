#!/usr/bin/env bash
# The manual's "Step by step: creating a virtual machine on a headless server" (user_Frontends.xml,
# lines 186-240), command for command, with the Linux test guest ISO in place of Windows XP's.
#
# Inputs (environment): HEADBOX_GUEST_ISO (absolute path of the ISO), HEADBOX_SERIAL_LOG (where COM1
# goes, so a test sees the guest's ready marker), HEADBOX_VRDE_PORT (a free port: tests listen on
# loopback only); VBOX_USER_HOME as for VBoxManage. Runs in the current folder (WinXP.vdi lands there).
# VBoxHeadless is left running in the background; its pid is in ./VBoxHeadless.pid, its output in
# ./VBoxHeadless.log.
set -euo pipefail
: "${HEADBOX_GUEST_ISO:?the guest ISO}" "${HEADBOX_SERIAL_LOG:?the serial log}" "${HEADBOX_VRDE_PORT:?a free port}"
set -x

# 1. On the headless server, create a new virtual machine.
VBoxManage createvm --name "Windows XP" --ostype WindowsXP --register
VBoxManage list ostypes > ostypes.txt

# 2. Settings appropriate for the guest.
VBoxManage modifyvm "Windows XP" --memory 256 --acpi on --boot1 dvd --nic1 nat
#    Not in the manual: COM1 into a file (the test waits for the guest's ready marker there) and
#    the RDP server on loopback and a free port (tests never listen beyond loopback).
VBoxManage modifyvm "Windows XP" --uart1 0x3F8 4 --uartmode1 file "$HEADBOX_SERIAL_LOG" \
    --vrdeaddress 127.0.0.1 --vrdeport "$HEADBOX_VRDE_PORT"

# 3. A 10 GB virtual hard disk, registered.
VBoxManage createhd --filename "WinXP.vdi" --size 10000 --remember

# 4. An IDE controller.
VBoxManage storagectl "Windows XP" --name "IDE Controller" \
    --add ide --controller PIIX4

# 5. The new disk as the VM's first hard disk.
VBoxManage storageattach "Windows XP" --storagectl "IDE Controller" \
    --port 0 --device 0 --type hdd --medium "WinXP.vdi"

# 6. Register the installation ISO.
VBoxManage openmedium dvd "$HEADBOX_GUEST_ISO"

# 7. Attach it so the VM boots from it.
VBoxManage storageattach "Windows XP" --storagectl "IDE Controller" \
    --port 0 --device 1 --type dvddrive --medium "$HEADBOX_GUEST_ISO"

# 8. Start the VM with VBoxHeadless (in the background here, so the test can go on).
VBoxHeadless --startvm "Windows XP" > VBoxHeadless.log 2>&1 &
echo $! > VBoxHeadless.pid
