"""The audit's side-by-side jobs: the helpers live in cmri_release.core.parallel (the generators' synthesis uses
them too); the names stay importable here."""
from cmri_release.core.parallel import (CUDA_WORKERS, default_workers, effective_workers, map_jobs,  # noqa: F401
                                        one_thread)
