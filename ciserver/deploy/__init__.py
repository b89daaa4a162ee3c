"""Deployments: strategies (recreate, blue_green, canary) and the traffic router (nginx)."""
