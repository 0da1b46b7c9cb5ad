"""Analysis: metrics, empirical and fitted variograms, spatial statistics, paired comparisons of runs."""
