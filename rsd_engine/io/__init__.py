"""What a run reads and writes around the flow: the preset in, the run folder out, and the process
it runs in.

``config`` (the preset schema, TOML load/save, overrides), ``runs`` (the run folder's one owner:
layout, names, atomic writes, tolerant readers, status), ``trackers`` (events to TensorBoard and
others), ``timing`` (where a run's time went), ``signals`` (stop signals and the stop policy) and
``processes`` (processes asked for against processes seen). Used by every step of the flow; none of
them trains or evaluates. Submodules are imported by name; this file imports none of them.
"""
