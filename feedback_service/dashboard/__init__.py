"""The managers' dashboard: journey map, trends, comments, funnel and alerts."""
