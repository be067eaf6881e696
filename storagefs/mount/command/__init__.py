"""``storagefs mount`` / ``storagefs umount`` and the ``mount.storagefs`` helper for fstab.

- ``arguments``: the ``mount`` and ``umount`` verbs, and the one function that turns their
  arguments into a ``MountConfig`` and a ``ClientConfig``.
- ``checks``: what can be checked before mounting, each failure one line with its fix.
- ``daemon``: ``run`` checks, then serves the FUSE loop here or hands over to the supervisor.
- ``supervisor``: background mode; a child process serves and reports through a pipe.
- ``umount``: unmounting, also of a stale mount.
- ``fstab``: ``mount.storagefs``, the helper mount(8) runs for fstab entries; ``python -m
  storagefs.mount.command`` runs it too.
"""
