// The types of react-pts-canvas 0.5.2 that demo/frontend (src/common/components/video/
// filmstrip/VideoFilmstrip.tsx) names.
import type {Bound, CanvasForm, CanvasSpace, Group} from 'pts';
import type {CanvasHTMLAttributes, ForwardRefExoticComponent, RefAttributes} from 'react';

export type PtsCanvasImperative = {
  getSpace: () => CanvasSpace | undefined;
  getForm: () => CanvasForm | undefined;
  getCanvas: () => HTMLCanvasElement | null;
};

export type PtsCanvasProps = Omit<CanvasHTMLAttributes<HTMLCanvasElement>, 'onResize'> & {
  background?: string;
  resize?: boolean;
  retina?: boolean;
  play?: boolean;
  refresh?: boolean;
  canvasStyle?: object;
  onPtsReady?: (space: CanvasSpace, form: CanvasForm, bound: Bound) => void;
  onPtsAnimate?: (space: CanvasSpace, form: CanvasForm, time: number, ftime: number) => void;
  onPtsResize?: (space: CanvasSpace, form: CanvasForm, size: Group, evt: Event) => void;
};

export declare const PtsCanvas: ForwardRefExoticComponent<PtsCanvasProps & RefAttributes<PtsCanvasImperative>>;
