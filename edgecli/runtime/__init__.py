"""Code that runs inside a worker process: the function API and the worker loop."""
