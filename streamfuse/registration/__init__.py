"""Estimating a camera pair's calibration: from points, a board, the scene itself (ECC), the
time offset from motion, and checking a calibration on real frames."""
