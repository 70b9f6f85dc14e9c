"""crn-deploy: export, build and run Cascaded Refinement Network generators."""

__version__ = "0.1.0"
