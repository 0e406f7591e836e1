"""What the MPI launcher's environment says about this process: rank, size, ranks per node.

Reads only environment variables (no MPI call, no mpi4py import), so the thread count
(:mod:`convnet._parallel`) and :func:`convnet.show_config` can ask without touching MPI;
:mod:`convnet.distributed` builds on it and offers it publicly.
"""

from __future__ import annotations

import os

# (rank, size, ranks on this node) as each launcher's environment spells them: the mpiexec
# of MPICH and Intel MPI (Hydra), Open MPI's mpirun and MVAPICH2's.
LAUNCHER_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE"),
)


def _integer(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def launch_info() -> dict[str, int] | None:
    """Rank, size and ranks on this node as the MPI launcher's environment gives them.

    Reads only environment variables (no MPI call, no mpi4py import).

    Returns
    -------
    dict or None
        ``{"rank": r, "size": P, "local_size": L}`` when a launcher started this process
        with ``P > 1`` ranks (``local_size`` is ``P`` when the launcher does not say),
        else None.
    """
    for rank_name, size_name, local_name in LAUNCHER_VARIABLES:
        rank, size = _integer(rank_name), _integer(size_name)
        if rank is None or size is None or size < 2 or not 0 <= rank < size:
            continue
        local_size = _integer(local_name)
        if local_size is None or not 1 <= local_size <= size:
            local_size = size
        return {"rank": rank, "size": size, "local_size": local_size}
    return None


def ranks_on_this_node() -> int:
    """How many ranks of this MPI job share this machine (1 outside a launcher)."""
    info = launch_info()
    return 1 if info is None else info["local_size"]


def launched_rank() -> int:
    """This process's rank as the launcher's environment says (0 outside a launcher)."""
    info = launch_info()
    return 0 if info is None else info["rank"]
