"""Monitoring: drift statistics of the champion's reference against recent windows, their report, the monitor."""
