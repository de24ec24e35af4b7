"""The pieces of ``python -m reproduce.train``: the official recipes (:mod:`.recipe`), the data the
official Python layers fed (:mod:`.data`), the start weights (:mod:`.init`), scoring as
``score.py`` (:mod:`.scoring`), and the run's log and plot (:mod:`.log`)."""
