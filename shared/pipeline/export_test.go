package pipeline

// OnTickRemoved has f run between StopTickingIfIdle's removal of the tick and its
// second look: where a run recorded meanwhile comes.
func (e *Env) OnTickRemoved(f func()) { e.tickRemoved = f }
