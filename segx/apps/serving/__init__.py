"""The prediction server (``segx --serve``): the HTTP app (``app``), batching for its one
engine thread (``batcher``), the memory budget of requests in flight (``budget``) and the checks
on untrusted request bytes and URLs (``untrusted``)."""
