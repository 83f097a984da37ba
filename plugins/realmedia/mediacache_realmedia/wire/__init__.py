"""Wire formats of RealMedia: the .rm file format (:mod:`.rmf`) and RDT (:mod:`.rdt`).

Each module keeps its construct declarations private to itself and exposes plain functions and
frozen dataclasses only.
"""
