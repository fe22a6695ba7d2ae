"""KServe serving of the flight-delay model: transformer (Feast online features) + predictor."""
