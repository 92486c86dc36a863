"""The review's presentation: experiments, figures, dashboard, report, text."""
