"""Result files: a big job's results written to the file store once it ends, and dropped from Redis.

A job asks for them when it is submitted (``"results": {"format": ...}``); the write that ends it makes them
due (:mod:`batchery.store.watches`); a thread in every worker (:mod:`.writer`) takes each due job under its
finalizing lease and writes its files a page at a time (:mod:`.finalize`, in the formats of :mod:`.formats`).
"""

from batchery.results.formats import FORMATS, ResultsRequest

__all__ = ["FORMATS", "ResultsRequest"]
