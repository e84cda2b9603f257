"""``ptyopt explain``: why a reconstruction works or fails — the probe through the slices, which loss term drives
which tensor, loss-landscape cuts, the position-correction field, the data residual per position, the per-slice
FRC between half-dataset reconstructions."""

from ptyopt.explain.gradients import gradient_shares, term_gradients
from ptyopt.explain.landscape import CUTS, Cut, landscape_cut
from ptyopt.explain.run import ExplainOptions, explain_result
from ptyopt.explain.session import Session, open_session

__all__ = ["CUTS", "Cut", "ExplainOptions", "Session", "explain_result", "gradient_shares", "landscape_cut",
           "open_session", "term_gradients"]
