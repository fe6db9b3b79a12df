"""Building blocks of the Moebius student and the PixelHacker teacher."""
