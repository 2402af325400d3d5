"""cmri-release: a release gate for synthetic cardiac MRI cohorts."""

__version__ = "0.1.0"
