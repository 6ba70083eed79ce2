"""Model soups (Croce et al. 2023): the soup grid and its ids, the soups on lines between the base models
and their figures, soups per distribution shift (search over the simplex, stages, report), and the
command line's soups (mixing, soup-for)."""
