"""Past one machine: batch synthesis on a Ray cluster (``batch``) and a Ray Serve endpoint (``serve``).
Ray is imported only inside these functions (the ``ray`` extra); like the runtime, no torch."""
