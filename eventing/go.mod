module github.com/evalflow/evalflow/eventing

go 1.26.0
