"""``python -m storagefs.mount.command SOURCE MOUNTPOINT -o OPTIONS`` is ``mount.storagefs``."""

import sys

from .fstab import mount_helper

sys.exit(mount_helper())
