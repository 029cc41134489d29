"""The warehouse I/O layer: every read and write of the platform's tables goes through here.

``tables`` names each table once; ``streams`` holds the one streaming reader (COPY to Arrow,
a chunk at a time), the one writer (COPY of a frame) and the one way to replace a partition
in one transaction under its advisory lock; one module per table family (``raw``,
``features``, ``scores``, ``monitoring``, ``model_versions``) holds that family's queries. The
stage modules of ``core`` compute on the frames these return.
"""
