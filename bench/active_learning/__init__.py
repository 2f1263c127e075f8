"""Active-learning benchmark: do the query strategies in `learners.ml.strategies` save labels over random sampling?"""
