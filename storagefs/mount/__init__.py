"""``storagefs mount``: the storage as a read-only drive in which every ``*.zip`` is a folder.

``command/`` parses and checks, then serves ``fuseops`` over ``vfs`` (paths to entries), which
asks ``backend`` for listings and hands each open file to the ``read`` engine.
"""
