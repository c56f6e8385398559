//! Fast matchers (issue 4).
