"""The application database: users, the prediction log and reviewers' feedback."""
