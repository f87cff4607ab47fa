"""The networks every step of the flow trains or samples: the teacher, the fake score and the
one-step generator share one architecture.

``networks`` (EDM preconditioning around diffusers' UNet or EDM's DDPM++/NCSN++, built from a preset
or a stored config), ``songunet`` (EDM's DDPM++/NCSN++ backbone), ``edm_pickle`` (EDM-format pickles
read without running their code) and ``edm_import`` (an EDM-format teacher as a network or a run
folder). Submodules are imported by name; this file imports none of them.
"""
