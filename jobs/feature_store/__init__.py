"""The online store serving reads at request time: the snapshot LATEST points to,
materialised through Feast (`oasis serving sync`; the `serving` extra installs
Feast).

* `definitions`: the feature repository as Python objects (entities, feature
  views, the repository config), derived from `schemas`.
* `repository`: the repository on disk: one complete store per snapshot behind
  an atomic `current` pointer, its state file, garbage collection, opening it.
* `sync`: what a sync does: read LATEST through the serving reader (verified,
  fresh, within flights), build a store, switch the pointer.

`import feast` costs 4-6 s, so it happens inside the functions that need it:
the rest of OASIS never pays for it, and runs without the extra installed.
"""
