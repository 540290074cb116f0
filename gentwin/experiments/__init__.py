"""One runner per figure or table of the paper (Figs. 6-8, Table IV): resolved settings in, a tidy DataFrame out."""
