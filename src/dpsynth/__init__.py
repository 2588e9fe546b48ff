"""dpsynth"""
